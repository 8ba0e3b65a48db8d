//go:build tools

// Package tools pins helm's command, built by scripts/kube.sh for the chart tests.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
