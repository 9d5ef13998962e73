package main

import (
	"fmt"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/shop"
	"github.com/openedx/coordinator/internal/wcorders"
	"github.com/openedx/coordinator/internal/webhooks"
)

// loadConfig loads the configuration and has each adapter check the part
// only it knows (integration types and their API keys, what
// woocommerce.complete_order needs): the config package validates the rest
// and lists no adapter's names.
func loadConfig(path string, getenv func(string) string) (config.Config, error) {
	cfg, err := config.Load(path, getenv)
	if err != nil {
		return cfg, err
	}
	if err := checkAdapters(cfg); err != nil {
		return config.Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// checkAdapters runs every adapter's check of the configuration.
func checkAdapters(cfg config.Config) error {
	for i, in := range cfg.Integrations {
		if err := shop.CheckIntegration(fmt.Sprintf("integrations[%d]", i), in); err != nil {
			return err
		}
	}
	return wcorders.Check(cfg)
}

// warnings are the configuration's warnings and the adapters'.
func warnings(cfg config.Config) []string {
	return append(cfg.Warnings(), webhooks.Warnings(cfg)...)
}
