// Package deploy holds what ships beside the binary (systemd units, default settings, the
// Debian package, Prometheus rules, Grafana dashboards); its tests check the package.
package deploy
