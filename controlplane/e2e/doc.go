// Package e2e tests the built govcloud binary: the CLI verbs against a controller, and the
// controller as a process (restart after kill -9, leader failover between two controllers
// sharing one etcd). It has only tests.
package e2e
