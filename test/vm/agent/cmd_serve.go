package main

import (
	"context"
	"flag"
	"log"
	"os"

	"github.com/filewatcher/filewatcher/test/vm/agent/vmagent"
)

// cmdServe runs the guest side until its listener fails.
func cmdServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "0.0.0.0:50100", "address to listen on")
	fs.Parse(args)
	logger := log.New(os.Stderr, "agent: ", log.LstdFlags|log.Lmicroseconds)
	return vmagent.ListenAndServe(context.Background(), *listen, logger)
}
