package filter

import (
	"path"
	"strings"
	"unicode/utf8"
)

// glob is a path.Match pattern parsed once, so that matching an event does
// not parse the pattern again. path.Match re-reads (and re-validates) the
// whole chunk after a star at every position it tries, which costs
// len(chunk) per byte of the path even when the first byte differs; glob
// stops at the first difference and compares literal runs with
// strings.HasPrefix. It matches exactly what path.Match matches (FuzzGlob
// checks this).
type glob struct {
	chunks []chunk
}

// chunk is an optional leading star followed by tokens that each match a
// fixed piece of the name.
type chunk struct {
	star    bool
	toks    []token
	minLen  int  // bytes the tokens need at least
	literal bool // every token is a literal: the chunk is minLen bytes exactly
}

type tokenKind uint8

const (
	tokLiteral tokenKind = iota // lit, byte for byte
	tokAny                      // '?': one rune other than '/'
	tokClass                    // '[...]': one rune in (or, negated, not in) ranges
)

type token struct {
	kind    tokenKind
	lit     string
	negated bool
	ranges  []runeRange
}

type runeRange struct{ lo, hi rune }

// compileGlob parses p, which path.Match must accept.
func compileGlob(p string) (glob, error) {
	if _, err := path.Match(p, ""); err != nil {
		return glob{}, err // path.Match validates the whole pattern
	}
	var g glob
	for len(p) > 0 {
		var c chunk
		for len(p) > 0 && p[0] == '*' {
			p, c.star = p[1:], true
		}
		for len(p) > 0 && p[0] != '*' {
			var t token
			t, p = scanToken(p)
			if n := len(c.toks); t.kind == tokLiteral && n > 0 && c.toks[n-1].kind == tokLiteral {
				c.toks[n-1].lit += t.lit
				continue
			}
			c.toks = append(c.toks, t)
		}
		c.literal = true
		for _, t := range c.toks {
			c.minLen += max(len(t.lit), 1)
			c.literal = c.literal && t.kind == tokLiteral
		}
		g.chunks = append(g.chunks, c)
	}
	return g, nil
}

// scanToken reads one token of a valid pattern that does not start with '*'.
func scanToken(p string) (token, string) {
	switch p[0] {
	case '?':
		return token{kind: tokAny}, p[1:]
	case '\\':
		return token{kind: tokLiteral, lit: p[1:2]}, p[2:]
	case '[':
		t := token{kind: tokClass}
		p = p[1:]
		if p[0] == '^' {
			t.negated, p = true, p[1:]
		}
		for len(t.ranges) == 0 || p[0] != ']' {
			var r runeRange
			r.lo, p = classRune(p)
			r.hi = r.lo
			if p[0] == '-' {
				r.hi, p = classRune(p[1:])
			}
			t.ranges = append(t.ranges, r)
		}
		return t, p[1:]
	}
	return token{kind: tokLiteral, lit: p[:1]}, p[1:]
}

// classRune reads a possibly escaped rune of a class in a valid pattern.
func classRune(p string) (rune, string) {
	if p[0] == '\\' {
		p = p[1:]
	}
	r, n := utf8.DecodeRuneInString(p)
	return r, p[n:]
}

// wildcards counts the '?' and '[...]' tokens, whose cost the limits bound.
func (g *glob) wildcards() int {
	n := 0
	for _, c := range g.chunks {
		for _, t := range c.toks {
			if t.kind != tokLiteral {
				n++
			}
		}
	}
	return n
}

// match reports whether name matches, as path.Match(pattern, name) would.
func (g *glob) match(name string) bool {
	for i := range g.chunks {
		c := &g.chunks[i]
		last := i == len(g.chunks)-1
		if c.star && len(c.toks) == 0 {
			return strings.IndexByte(name, '/') < 0 // trailing star
		}
		if rest, ok := c.matchPrefix(name); ok && (len(rest) == 0 || !last) {
			name = rest
			continue
		}
		if !c.star {
			return false
		}
		if last && c.literal {
			// Only one place can end the name: the star takes the rest.
			end := len(name) - c.minLen
			return end > 0 && strings.IndexByte(name[:end], '/') < 0 && name[end:] == c.toks[0].lit
		}
		// The star takes the shortest run of non-'/' bytes after which the
		// chunk matches (the last chunk must also end the name).
		found := false
		for j := 0; j < len(name)-c.minLen && name[j] != '/'; j++ {
			if rest, ok := c.matchPrefix(name[j+1:]); ok && (len(rest) == 0 || !last) {
				name, found = rest, true
				break
			}
		}
		if !found {
			return false
		}
	}
	return len(name) == 0
}

// matchPrefix matches the chunk's tokens at the start of s and returns the
// rest of s.
func (c *chunk) matchPrefix(s string) (string, bool) {
	for i := range c.toks {
		t := &c.toks[i]
		switch t.kind {
		case tokLiteral:
			if !strings.HasPrefix(s, t.lit) {
				return "", false
			}
			s = s[len(t.lit):]
		case tokAny:
			if len(s) == 0 || s[0] == '/' {
				return "", false
			}
			_, n := utf8.DecodeRuneInString(s)
			s = s[n:]
		case tokClass:
			if len(s) == 0 {
				return "", false
			}
			r, n := utf8.DecodeRuneInString(s)
			if t.contains(r) == t.negated {
				return "", false
			}
			s = s[n:]
		}
	}
	return s, true
}

func (t *token) contains(r rune) bool {
	for _, rg := range t.ranges {
		if rg.lo <= r && r <= rg.hi {
			return true
		}
	}
	return false
}
