package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/webhooks"
)

// newDeliveries turns the webhooks: section into the subscribers' receivers
// and kinds.
func newDeliveries(cfg config.Config) (*webhooks.Deliveries, error) {
	var o webhooks.Options
	for _, w := range cfg.Webhooks {
		o.Subscribers = append(o.Subscribers, webhooks.Subscriber{
			Name: w.Name, URL: w.URL, Secrets: w.Secrets, Timeout: w.Timeout.D(), Headers: w.Headers,
			MaxConcurrency: w.MaxConcurrency,
		})
	}
	return webhooks.New(o)
}

// printWebhooks lists the subscribers for `config check`: where they are and
// how many secrets sign, never the secrets, a URL's user info or query, or
// a header's value.
func printWebhooks(cfg config.Config, stdout io.Writer) {
	if len(cfg.Webhooks) == 0 {
		return
	}
	fmt.Fprintln(stdout, "webhooks:")
	for _, w := range cfg.Webhooks {
		var headers []string
		for k := range w.Headers {
			headers = append(headers, k)
		}
		slices.Sort(headers)
		fmt.Fprintf(stdout, "  - webhook.%s: url %s, %d secret(s), timeout %v, max_concurrency %d, headers [%s]\n",
			w.Name, config.RedactURL(w.URL), len(w.Secrets), w.Timeout.D(), w.MaxConcurrency, strings.Join(headers, ", "))
	}
}

// webhooksCommand runs `coordinator webhooks ping NAME`: one signed test
// delivery to a subscriber, now, with its outcome printed.
func webhooksCommand(ctx context.Context, cfg config.Config, args []string, stdout io.Writer) error {
	if len(args) != 2 || args[0] != "ping" {
		return errors.New("usage: coordinator webhooks ping NAME")
	}
	hooks, err := newDeliveries(cfg)
	if err != nil {
		return err
	}
	id, err := hooks.Ping(ctx, args[1])
	if err != nil {
		return fmt.Errorf("ping webhook.%s: %w", args[1], err)
	}
	fmt.Fprintf(stdout, "webhook.%s: delivered (webhook-id %s)\n", args[1], id)
	return nil
}
