package main

import "github.com/openedx/coordinator/internal/config"

// listenAddr is where a process of the given mode serves HTTP: a worker its
// /health and /metrics on worker.http_addr, the API (api, all) on
// http.addr. An API and a worker thus run side by side from one file.
func listenAddr(cfg config.Config, mode string) string {
	if mode == "worker" {
		return cfg.Worker.HTTPAddr
	}
	return cfg.HTTP.Addr
}

// withListenAddr is cfg with http.addr set to listenAddr, for serveHTTP.
func withListenAddr(cfg config.Config, mode string) config.Config {
	cfg.HTTP.Addr = listenAddr(cfg, mode)
	return cfg
}
