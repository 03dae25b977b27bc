// Command failures prints what the failed tests of a `go test -v` log said:
// for each failed test without a failed subtest, the lines logged while it
// ran (its t.Log/t.Error lines and the indented lines under them), at most
// -lines of them. The Makefile's e2e targets run it when a half fails, so
// the end of the output (all CI keeps of a long run) names the cause rather
// than only the tree of FAIL lines.
//
//	go run ./test/e2e/failures [-lines N] LOG
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
)

var (
	// "=== RUN   TestKernel/amd64/6.1/kmod", also CONT and NAME.
	runLine = regexp.MustCompile(`^=== (?:RUN|CONT|NAME)\s+(\S+)`)
	// "    --- FAIL: TestKernel/amd64/6.1/kmod (1.23s)" at any depth.
	failLine = regexp.MustCompile(`^\s*--- FAIL: (\S+)`)
	// Result lines end a test's output; they are not part of it.
	resultLine = regexp.MustCompile(`^\s*--- (?:PASS|FAIL|SKIP): |^(?:PASS|FAIL|ok\s)`)
)

func main() {
	lines := flag.Int("lines", 40, "at most this many lines of each failed test")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: failures [-lines N] LOG")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "failures:", err)
		os.Exit(1)
	}
	defer f.Close()

	output := map[string][]string{}
	var order []string // tests in the order they first ran
	var failed []string
	current := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case runLine.MatchString(line):
			current = runLine.FindStringSubmatch(line)[1]
			if _, ok := output[current]; !ok {
				output[current] = nil
				order = append(order, current)
			}
		case failLine.MatchString(line):
			failed = append(failed, failLine.FindStringSubmatch(line)[1])
		case resultLine.MatchString(line):
		case current != "":
			output[current] = append(output[current], line)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "failures:", err)
		os.Exit(1)
	}

	isFailed := map[string]bool{}
	for _, name := range failed {
		isFailed[name] = true
	}
	leaf := func(name string) bool {
		for _, other := range failed {
			if strings.HasPrefix(other, name+"/") {
				return false
			}
		}
		return true
	}
	n := 0
	for _, name := range order {
		if !isFailed[name] || !leaf(name) {
			continue
		}
		n++
		out := output[name]
		fmt.Printf("--- what %s said (%d lines", name, len(out))
		if len(out) > *lines {
			fmt.Printf(", the last %d", *lines)
			out = out[len(out)-*lines:]
		}
		fmt.Println("):")
		for _, l := range out {
			fmt.Println(l)
		}
	}
	if n == 0 && len(failed) == 0 {
		fmt.Println("failures: no failed test in the log (the run failed outside a test: build, timeout or panic; see its end)")
	}
}
