package main

import (
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/shop"
)

// newShops turns the integrations: section into the shops that may post to
// /webhooks/{name}.
func newShops(cfg config.Config) (map[string]*shop.Shop, error) {
	shops := make(map[string]*shop.Shop, len(cfg.Integrations))
	for _, in := range cfg.Integrations {
		products := make(map[string]shop.Product, len(in.Products))
		for k, p := range in.Products {
			items := make([]shop.Item, len(p))
			for i, it := range p {
				items[i] = shop.Item{CourseID: it.CourseID, Mode: it.Mode}
				if it.CourseUUID != "" { // validated with the config
					items[i].CourseUUID, _ = fulfillment.CourseUUID(it.CourseUUID)
				}
			}
			products[k] = shop.Product{Items: items}
		}
		s, err := shop.New(shop.Integration{
			Name: in.Name, Type: in.Type, Secrets: in.Secrets, Site: in.Site, OrderPrefix: in.OrderPrefix,
			CourseMode: in.CourseMode, Products: products, LearnerEmailField: in.LearnerEmailField,
			EnrollUnregistered: in.EnrollUnregistered, AcceptTestOrders: in.AcceptTestOrders,
			APIKey: in.APIKey, APIURL: in.APIURL, ConsumerKey: in.ConsumerKey, ConsumerSecret: in.ConsumerSecret,
		})
		if err != nil {
			return nil, err
		}
		shops[in.Name] = s
	}
	return shops, nil
}

// printIntegrations lists the integrations for `config check`, without
// their secrets: where each posts, what it maps, and how many secrets it has.
func printIntegrations(cfg config.Config, stdout io.Writer) {
	if len(cfg.Integrations) == 0 {
		fmt.Fprintln(stdout, "integrations: []")
		return
	}
	fmt.Fprintln(stdout, "integrations:")
	for _, in := range cfg.Integrations {
		fmt.Fprintf(stdout, "  - name: %s\n    type: %s\n    route: POST /webhooks/%s\n", in.Name, in.Type, in.Name)
		fmt.Fprintf(stdout, "    site: %s\n    order_prefix: %q\n    course_mode: %s\n", in.Site, in.OrderPrefix, in.CourseMode)
		fmt.Fprintf(stdout, "    secrets: %d (not shown)\n", len(in.Secrets))
		if in.LearnerEmailField != "" {
			fmt.Fprintf(stdout, "    learner_email_field: %q\n", in.LearnerEmailField)
		}
		fmt.Fprintf(stdout, "    enroll_unregistered: %t\n    accept_test_orders: %t\n", in.EnrollUnregistered, in.AcceptTestOrders)
		if in.APIURL != "" {
			fmt.Fprintf(stdout, "    api_url: %s\n", config.RedactURL(in.APIURL))
		}
		if len(in.Products) > 0 {
			fmt.Fprintln(stdout, "    products:")
			for _, k := range slices.Sorted(maps.Keys(in.Products)) {
				p := in.Products[k]
				if len(p) == 1 {
					fmt.Fprintf(stdout, "      %q: %s\n", k, productItem(p[0], in.CourseMode))
					continue
				}
				fmt.Fprintf(stdout, "      %q:\n", k)
				for _, it := range p {
					fmt.Fprintf(stdout, "        - %s\n", productItem(it, in.CourseMode))
				}
			}
		}
	}
}

// productItem describes one item of a product for `config check`: the
// course run or the course, and the mode.
func productItem(it config.ProductItem, defaultMode string) string {
	mode := it.Mode
	if mode == "" {
		mode = defaultMode
	}
	if it.CourseUUID != "" {
		return fmt.Sprintf("course %s (%s, an entitlement)", it.CourseUUID, mode)
	}
	return fmt.Sprintf("%s (%s)", it.CourseID, mode)
}
