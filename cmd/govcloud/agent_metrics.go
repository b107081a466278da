package main

import (
	"net/http"

	"github.com/govcloud/govcloud/agent"
)

// agentMetrics returns the /metrics handler for an agent (nil until metering provides one).
func agentMetrics(a *agent.Agent, host string) http.Handler { return nil }
