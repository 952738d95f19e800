package cli

import "io"

// Cluster shows this node, the state of the cluster's Redis and the
// nodes seen: mxguard cluster (GET /api/v1/cluster; not in INTERFACE.md
// §1, an addition beside servers and spool status).
func Cluster(args []string, stdout, stderr io.Writer) int {
	c := newCommand("mxguard cluster", "[--json]", envAPI(), stdout, stderr)
	c.jsonFlag("print the API's JSON")
	if code, ok := c.noArgs(args); !ok {
		return code
	}
	var res struct {
		Node  string `json:"node"`
		Redis string `json:"redis"`
		Nodes []struct {
			Node     string `json:"node"`
			LastSeen string `json:"last_seen"`
		} `json:"nodes"`
	}
	if code, done := c.fetch("GET", "/api/v1/cluster", nil, nil, &res); done {
		return code
	}
	t := newTable(stdout, "NODE", "REDIS")
	t.row(res.Node, res.Redis)
	t.flush()
	if len(res.Nodes) > 0 {
		t = newTable(stdout, "NODE SEEN", "LAST SEEN")
		for _, n := range res.Nodes {
			t.row(n.Node, n.LastSeen)
		}
		t.flush()
	}
	return exitOK
}
