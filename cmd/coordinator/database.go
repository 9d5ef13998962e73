package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/store/postgres"
)

// migrate applies pending migrations to database.url.
func migrate(ctx context.Context, cfg config.Config, stdout io.Writer) error {
	if cfg.Database.URL == "" {
		return errors.New("migrate: database.url is not set")
	}
	pool, err := postgres.Connect(ctx, cfg.Database.URL)
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := postgres.Migrate(ctx, pool)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintf(stdout, "schema up to date (version %d)\n", postgres.LatestVersion())
		return nil
	}
	fmt.Fprintf(stdout, "applied migrations %v; schema at version %d\n", applied, postgres.LatestVersion())
	return nil
}

const sitesUsage = `usage: coordinator sites COMMAND

  list                               list sites (secrets are never shown)
  add NAME --lms-url URL --client-id ID [--oauth-url URL] [--timeout 7s]
                                     add a site; the client secret is read from the
                                     environment variable named by --client-secret-env
                                     (default SITE_CLIENT_SECRET), the optional API key
                                     from --api-key-env, never from the command line
  update NAME [same flags]           change the given fields of a site
  remove NAME                        remove a site

Sites need database.url and database.secret_key. The site "default" is the
YAML lms: section and cannot be stored.
`

// sitesCommand manages the sites table.
func sitesCommand(ctx context.Context, cfg config.Config, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "help" {
		fmt.Fprint(stdout, sitesUsage)
		return nil
	}
	if cfg.Database.URL == "" || cfg.Database.SecretKey == "" {
		return errors.New("sites: database.url and database.secret_key must be set")
	}
	pool, err := postgres.Connect(ctx, cfg.Database.URL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := postgres.CheckSchema(ctx, pool); err != nil {
		return err
	}
	key, _ := config.SecretKeyBytes(cfg.Database.SecretKey)
	store, err := postgres.NewSites(pool, key)
	if err != nil {
		return err
	}
	switch args[0] {
	case "list":
		list, err := store.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tLMS URL\tOAUTH URL\tCLIENT ID\tCLIENT SECRET\tAPI KEY\tTIMEOUT\tUPDATED")
		for _, s := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.LMSURL, orDash(s.OAuthURL), s.ClientID,
				setOrNot(s.ClientSecret), setOrNot(s.APIKey), s.Timeout, s.UpdatedAt.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	case "remove":
		if len(args) != 2 {
			return errors.New("usage: coordinator sites remove NAME")
		}
		if err := store.Remove(ctx, args[1]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed site %s\n", args[1])
		return nil
	case "add", "update":
		if len(args) < 2 || strings.HasPrefix(args[1], "-") {
			return fmt.Errorf("usage: coordinator sites %s NAME [flags]", args[0])
		}
		name := args[1]
		var site postgres.Site
		if args[0] == "update" {
			if site, err = store.Get(ctx, name); err != nil {
				return err
			}
		} else if _, err := store.Get(ctx, name); err == nil {
			return fmt.Errorf("site %s exists: use update", name)
		}
		if err := applySiteFlags(&site, name, args[0] == "add", args[2:], getenv); err != nil {
			return err
		}
		if err := store.Put(ctx, site); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "saved site %s\n", name)
		return nil
	}
	fmt.Fprint(stdout, sitesUsage)
	return fmt.Errorf("sites: unknown command %q", args[0])
}

// applySiteFlags sets the fields named on the command line.
func applySiteFlags(site *postgres.Site, name string, adding bool, args []string, getenv func(string) string) error {
	fs := flag.NewFlagSet("sites", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	lmsURL := fs.String("lms-url", "", "LMS root URL")
	oauthURL := fs.String("oauth-url", "", "token endpoint (default <lms-url>/oauth2/access_token)")
	clientID := fs.String("client-id", "", "OAuth client id")
	secretEnv := fs.String("client-secret-env", "SITE_CLIENT_SECRET", "environment variable holding the client secret")
	apiKeyEnv := fs.String("api-key-env", "", "environment variable holding the optional X-Edx-Api-Key")
	timeout := fs.Duration("timeout", 0, "per-call timeout (default lms.timeout)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("sites: %w", err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	if name == fulfillment.DefaultSite || !fulfillment.ValidSiteName(name) {
		return fmt.Errorf("sites: %q is not a valid site name (letters, digits, '_', '.', '-'; not \"default\")", name)
	}
	site.Name = name
	if given["lms-url"] || adding {
		if err := config.HTTPURL("--lms-url", *lmsURL); err != nil {
			return fmt.Errorf("sites: %w", err)
		}
		site.LMSURL = *lmsURL
	}
	if given["oauth-url"] {
		if *oauthURL != "" {
			if err := config.HTTPURL("--oauth-url", *oauthURL); err != nil {
				return fmt.Errorf("sites: %w", err)
			}
		}
		site.OAuthURL = *oauthURL
	}
	if given["client-id"] || adding {
		if *clientID == "" {
			return errors.New("sites: --client-id is required")
		}
		site.ClientID = *clientID
	}
	if given["client-secret-env"] || adding {
		secret := getenv(*secretEnv)
		if secret == "" {
			return fmt.Errorf("sites: $%s is empty: put the client secret there", *secretEnv)
		}
		site.ClientSecret = secret
	}
	if given["api-key-env"] {
		site.APIKey = getenv(*apiKeyEnv)
	}
	if given["timeout"] {
		site.Timeout = *timeout
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func setOrNot(s string) string {
	if s == "" {
		return "(none)"
	}
	return "(set)"
}
