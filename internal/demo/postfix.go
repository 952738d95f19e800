package demo

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"time"
)

// postfixHarvest plays a Postfix that kept its MX role and asks mxguard's
// policy server (listen.policy) about a harvester's recipients, as its
// smtpd would at each RCPT (check_policy_service): the names the SMTP
// harvest already proved unknown get 550 5.1.1 (the recipients directory
// remembers the downstream's answers), and once directory_harvest fires,
// 421 4.7.0, on which Postfix would disconnect the client. The judged
// source is the request's client_address, not the policy connection.
func (s *simulator) postfixHarvest(ctx context.Context, client string) {
	if s.policy == "" {
		return
	}
	s.n.say("POSTFIX        a Postfix MX asks the policy server about %s's recipients (check_policy_service)", client)
	d := net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", s.policy)
	if err != nil {
		s.n.say("  policy server: %v", err)
		return
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(nc)
	unknown := 0
	for i, name := range harvestNames {
		req := fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"+
			"client_address=%s\nclient_name=unknown\nclient_port=52525\nserver_address=127.0.0.1\nserver_port=25\n"+
			"helo_name=harvester.test\nsender=promo@harvester.test\nrecipient=%s@example.test\nrecipient_count=0\n"+
			"instance=demo.%d\nsize=0\n\n", client, name, i)
		if _, err := nc.Write([]byte(req)); err != nil {
			s.n.say("  policy server: %v", err)
			return
		}
		line, err := r.ReadString('\n')
		if err == nil {
			_, err = r.ReadString('\n')
		}
		if err != nil {
			s.n.say("  policy server: %v", err)
			return
		}
		action := strings.TrimPrefix(strings.TrimSpace(line), "action=")
		switch {
		case strings.HasPrefix(action, "550 5.1.1"):
			unknown++
		case strings.HasPrefix(action, "421"):
			s.n.say("  Postfix is told %d times \"550 5.1.1\", then for %s@example.test: %s (Postfix disconnects %s)", unknown, name, action, client)
			return
		default:
			s.n.say("  Postfix is told %q for %s@example.test", action, name)
		}
	}
	s.n.say("  Postfix was told \"550 5.1.1\" %d times and %s was not blocked", unknown, client)
}
