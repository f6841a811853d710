package cluster

import (
	"context"
	"testing"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// BenchmarkExec compares `true` run through the gateway holding the edge with the same call
// relayed through another gateway of the cluster, in one process:
//
//	go test -run '^$' -bench Exec -benchtime 500x ./agent/cluster/
func BenchmarkExec(b *testing.B) {
	a, other := pair(b, startNATS(b))
	p := protocol.ExecParams{Argv: []string{"true"}, TimeoutMs: 10000, MaxOutputBytes: 1024}
	for _, bc := range []struct {
		name  string
		fleet *Fleet
		via   string
	}{{"holder", a.fleet, "gw-a"}, {"relayed", other.fleet, "gw-a"}} {
		e := heldBy(b, bc.fleet, "pi-00000", bc.via)
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := e.Exec(context.Background(), "rid", p, nil, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
