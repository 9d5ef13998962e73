package main

import (
	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/shop"
	"github.com/openedx/coordinator/internal/wcorders"
)

// newCompleter gives woocommerce.complete_order the WooCommerce integrations
// of the integrations: section: their store (api_url) and REST API key.
func newCompleter(cfg config.Config) *wcorders.Completer {
	var shops []wcorders.Integration
	for _, in := range cfg.Integrations {
		if in.Type != shop.TypeWooCommerce {
			continue
		}
		shops = append(shops, wcorders.Integration{Name: in.Name, BaseURL: in.APIURL, ConsumerKey: in.ConsumerKey,
			ConsumerSecret: in.ConsumerSecret, OrderPrefix: in.OrderPrefix, Site: in.Site})
	}
	return wcorders.New(wcorders.Options{Integrations: shops})
}
