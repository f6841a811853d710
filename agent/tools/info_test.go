package tools_test

import (
	"context"
	"testing"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func TestGetDeviceInfo(t *testing.T) {
	tests := []struct {
		name string
		edge string
		info protocol.DeviceInfo
	}{
		{"sparse info by fingerprint", "SHA256:pi", protocol.DeviceInfo{Hostname: "pi", Network: []protocol.NetIface{{Name: "lo"}}}},
		{"full info by name", "PI", protocol.DeviceInfo{Hostname: "pi", OS: "linux", Disks: []protocol.DiskInfo{{Mount: "/"}},
			Network:      []protocol.NetIface{{Name: "eth0", Addrs: []string{"10.0.0.2/24"}}},
			Capabilities: protocol.Capabilities{Tools: map[string]string{"git": "/usr/bin/git"}, ContainerRuntimes: []string{"docker"}, PackageManager: "apt"},
			CollectedAt:  "2026-01-01T00:00:00Z"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var refresh bool
			f := &fakeFleet{edges: []gateway.EdgeStatus{{Name: "pi", Fingerprint: "SHA256:pi", Connected: true}}}
			f.infoFn = func(_ context.Context, edge string, r bool) (protocol.DeviceInfo, error) {
				refresh = r
				return tc.info, nil
			}
			h := newHarness(t, f, baseConfig())
			res := h.call("get_device_info", map[string]any{"edge": tc.edge, "refresh": true})
			if res.IsError || !refresh {
				t.Fatalf("isError=%v %q refresh=%v", res.IsError, text(res), refresh)
			}
			var out protocol.DeviceInfo
			structured(t, res, &out)
			if out.Edge != "pi" || out.Hostname != "pi" || out.Disks == nil || out.Capabilities.Tools == nil {
				t.Fatalf("got %+v", out)
			}
		})
	}
}
