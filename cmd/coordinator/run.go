package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: coordinator [--config FILE] COMMAND

commands:
  api            run the HTTP API
  worker         run the task worker
  all            run the API and the worker in one process
  config check [--lms]
                 validate the configuration and print the signal map; with --lms
                 also ask the LMS that every mapped product's course run and mode exist
  admin hash-password
                 print a bcrypt hash of a password read from a prompt or stdin
  token          print an admin JWT signed with the first HS256 issuer (local trials)
  migrate        apply the SQL migrations to database.url (idempotent)
  sites list|add|update|remove
                 manage LMS sites in the database (coordinator sites help)
  webhooks ping NAME
                 send one signed test delivery to subscriber NAME and print the outcome
  catalog plan|sync --integration NAME
                 stock a WooCommerce or Stripe shop from the LMS catalog (coordinator catalog help)
  version        print version and build information

--config defaults to $COORDINATOR_CONFIG, else configs/coordinator.yaml.
`

// run is the whole program; main only supplies the process's environment.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfgPath, rest, err := splitArgs(args)
	if err != nil {
		return err
	}
	if cfgPath == "" {
		cfgPath = getenv("COORDINATOR_CONFIG")
	}
	if cfgPath == "" {
		cfgPath = "configs/coordinator.yaml"
	}
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch rest[0] {
	case "version":
		fmt.Fprintln(stdout, versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "admin":
		return adminCommand(rest[1:], os.Stdin, stdout, stderr)
	}

	cfg, err := loadConfig(cfgPath, getenv)
	if err != nil {
		return err
	}
	switch cmd := strings.Join(rest, " "); {
	case cmd == "config check":
		return configCheck(cfg, stdout)
	case cmd == "config check --lms":
		return configCheckLMS(ctx, cfg, stdout)
	case rest[0] == "token":
		return printToken(cfg, rest[1:], stdout)
	case cmd == "migrate":
		return migrate(ctx, cfg, stdout)
	case rest[0] == "sites":
		return sitesCommand(ctx, cfg, rest[1:], getenv, stdout)
	case rest[0] == "webhooks":
		return webhooksCommand(ctx, cfg, rest[1:], stdout)
	case rest[0] == "catalog":
		return catalogCommand(ctx, cfg, rest[1:], stdout, stderr)
	case cmd == "api", cmd == "worker", cmd == "all":
		return serve(ctx, cfg, rest[0], stderr)
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// splitArgs takes --config FILE (or --config=FILE) from anywhere in args.
func splitArgs(args []string) (cfg string, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--config" || a == "-config":
			if i+1 >= len(args) {
				return "", nil, errors.New("--config needs a file name")
			}
			cfg = args[i+1]
			i++
		case strings.HasPrefix(a, "--config="):
			cfg = strings.TrimPrefix(a, "--config=")
		default:
			rest = append(rest, a)
		}
	}
	return cfg, rest, nil
}

func versionString() string {
	s := "coordinator " + version
	if bi, ok := debug.ReadBuildInfo(); ok {
		s += " " + bi.GoVersion
		for _, kv := range bi.Settings {
			if kv.Key == "vcs.revision" || kv.Key == "vcs.modified" {
				s += " " + kv.Key + "=" + kv.Value
			}
		}
	}
	return s
}
