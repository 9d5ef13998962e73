package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/openedx/coordinator/internal/cache"
	"github.com/openedx/coordinator/internal/catalog"
	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/shop"
	"github.com/openedx/coordinator/internal/sites"
	"github.com/openedx/coordinator/internal/store/postgres"
)

const catalogUsage = `usage: coordinator catalog plan|sync --integration NAME [--org ORG] [--run KEY]... [--include-free] [--json]

  plan   read the LMS catalog and the shop; print what sync would do per item
         (create, update, unchanged, retire, skip, failed); write nothing
  sync   do it: create missing products (unpublished), update Coordinator's
         fields (name, SKU, price, its own meta), retire ended runs

  --integration NAME  the integrations[] entry (woocommerce or stripe)
  --org ORG           only the runs of this organization
  --run KEY           only this course run (repeatable)
  --include-free      sell free modes (min_price 0) too
  --json              print the report as JSON

Exit status 1 when an item failed (the others are done).
`

// runList is --run, repeatable.
type runList []string

func (r *runList) String() string     { return strings.Join(*r, ",") }
func (r *runList) Set(v string) error { *r = append(*r, v); return nil }

// catalogCommand runs `coordinator catalog plan|sync`.
func catalogCommand(ctx context.Context, cfg config.Config, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "plan" && args[0] != "sync") {
		fmt.Fprint(stdout, catalogUsage)
		if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return errors.New("catalog: plan or sync?")
	}
	sync := args[0] == "sync"
	fs := flag.NewFlagSet("catalog "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	name := fs.String("integration", "", "")
	org := fs.String("org", "", "")
	free := fs.Bool("include-free", false, "")
	asJSON := fs.Bool("json", false, "")
	var runs runList
	fs.Var(&runs, "run", "")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("catalog %s: %w (coordinator catalog help)", args[0], err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("catalog %s: unexpected argument %q (coordinator catalog help)", args[0], fs.Arg(0))
	}
	for _, r := range runs {
		if !fulfillment.ValidCourseKey(r) {
			return fmt.Errorf("catalog: --run %q is not a course run key such as course-v1:edX+DemoX+Demo_Course", r)
		}
	}
	in, err := integration(cfg, *name)
	if err != nil {
		return err
	}
	shop, err := catalogShop(in)
	if err != nil {
		return err
	}
	// Other sites than default are in the sites table (the Postgres tier).
	var store sites.Store
	if in.Site != fulfillment.DefaultSite {
		pool, err := postgres.Connect(ctx, cfg.Database.URL)
		if err != nil {
			return err
		}
		defer pool.Close()
		key, _ := config.SecretKeyBytes(cfg.Database.SecretKey) // validated with the config
		s, err := postgres.NewSites(pool, key)
		if err != nil {
			return err
		}
		store = siteStore{s}
	}
	reg := sites.NewRegistry(lmsOptions(cfg, cache.NewMemory(memoryCacheEntries), newLogger(cfg, stderr), nil), store)
	src, err := reg.Client(ctx, in.Site)
	if err != nil {
		return fmt.Errorf("catalog: site %s: %w", in.Site, err)
	}
	opts := catalog.Options{Org: *org, Runs: runs, IncludeFree: *free, CourseMode: in.CourseMode, Now: time.Now(),
		Mapped: map[string]string{}}
	for key, p := range in.Products {
		for _, it := range p {
			if it.CourseID == "" {
				continue // a course (entitlement): the catalog stocks course runs
			}
			mode := cmp.Or(it.Mode, in.CourseMode)
			if k := it.CourseID + "@" + mode; opts.Mapped[k] == "" || key < opts.Mapped[k] {
				opts.Mapped[k] = key // the same one every time
			}
		}
	}
	do := catalog.Plan
	if sync {
		do = catalog.Sync
	}
	rep, err := do(ctx, src, shop, opts)
	if err != nil {
		return fmt.Errorf("catalog %s: %w", args[0], err)
	}
	rep.Integration, rep.Type = in.Name, in.Type
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printReport(stdout, rep)
	}
	if n := rep.Failed(); n > 0 {
		return fmt.Errorf("catalog %s: %d of %d items failed", args[0], n, len(rep.Results))
	}
	return nil
}

// integration finds the --integration entry.
func integration(cfg config.Config, name string) (config.Integration, error) {
	var names []string
	for _, in := range cfg.Integrations {
		if in.Name == name {
			return in, nil
		}
		names = append(names, in.Name)
	}
	if name == "" {
		return config.Integration{}, fmt.Errorf("catalog: --integration is required (configured: %s)", orNone(names))
	}
	return config.Integration{}, fmt.Errorf("catalog: no integration %q (configured: %s)", name, orNone(names))
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// catalogShop is the integration's product API.
func catalogShop(in config.Integration) (catalog.Shop, error) {
	hc := &http.Client{Timeout: 30 * time.Second,
		// A redirect would turn a POST into a GET, or send the
		// credentials elsewhere: the API URL must be the right one.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	k := "integrations[" + in.Name + "]"
	switch in.Type {
	case shop.TypeWooCommerce:
		switch {
		case in.APIURL == "":
			return nil, fmt.Errorf("catalog: %s.api_url is required: the store's base URL (https://shop.example.com)", k)
		case in.ConsumerKey == "" || in.ConsumerSecret == "":
			return nil, fmt.Errorf("catalog: %s.consumer_key and consumer_secret are required: a WooCommerce REST API key with Read/Write", k)
		}
		if u, _ := url.Parse(in.APIURL); !config.CredentialsSafe(u) {
			return nil, fmt.Errorf("catalog: %s.api_url must be https: the consumer key and secret travel with every call (plain http only to a loopback address)", k)
		}
		return catalog.NewWooCommerce(in.APIURL, in.ConsumerKey, in.ConsumerSecret, hc), nil
	case shop.TypeStripe:
		return catalog.NewStripe(cmp.Or(in.APIURL, shop.DefaultStripeAPIURL), in.APIKey, hc), nil
	}
	return nil, fmt.Errorf("catalog: integration %s is of type %s: only woocommerce and stripe products are made", in.Name, in.Type)
}

// printReport writes the report as a table and a summary line.
func printReport(w io.Writer, rep catalog.Report) {
	what := "plan (nothing written)"
	if rep.Sync {
		what = "sync"
	}
	fmt.Fprintf(w, "catalog %s: integration %s (%s), store currency %s\n\n", what, rep.Integration, rep.Type, strings.ToUpper(rep.Currency))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tSKU\tPRICE\tPRODUCT\tDETAIL")
	for _, r := range rep.Results {
		sku := r.SKU
		if sku == "" {
			sku = r.Run
		}
		detail := r.Reason
		if len(r.Fields) > 0 {
			detail = strings.Join(r.Fields, ", ") + ": " + detail
			detail = strings.TrimSuffix(detail, ": ")
		}
		if r.Action == catalog.Failed {
			detail = r.Error
			if r.Planned != "" {
				detail = string(r.Planned) + " failed: " + r.Error
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Action, sku, orDash(r.Price), orDash(r.Product), detail)
	}
	_ = tw.Flush()
	var counts []string
	for _, a := range catalog.Actions() {
		counts = append(counts, fmt.Sprintf("%s %d", a, rep.Counts[a]))
	}
	fmt.Fprintf(w, "\n%s\n", strings.Join(counts, " · "))
}
