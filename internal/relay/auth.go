package relay

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ErrNoAuth is the failure of a delivery server that offers no AUTH PLAIN
// (auth.downstream needs one that does).
var ErrNoAuth = errors.New("the delivery server offers no AUTH PLAIN")

// Authenticate checks a login by relaying it to the delivery servers
// (auth.downstream): on a new connection to the first server of the route
// that answers (EHLO, STARTTLS as delivery.tls says), AUTH PLAIN with the
// credentials as initial response (RFC 4954 §4, RFC 4616), then QUIT. The
// connection never joins the pool: it is authenticated as the user. 235 is
// true, 535 false; any other answer, or no server, is an error (a
// temporary failure for the client, not a wrong password).
//
// With delivery.tls none, or may and a server without STARTTLS, the
// credentials cross the network to the delivery server in plaintext;
// require keeps them encrypted.
func (r *Relay) Authenticate(ctx context.Context, rt Router, user, password string) (bool, error) {
	if strings.ContainsRune(user, 0) || strings.ContainsRune(password, 0) {
		return false, nil // no PLAIN message can carry them (RFC 4616 §2)
	}
	var errs []error
	for _, addr := range rt.Route() {
		c, err := r.connect(ctx, addr, r.o.CommandTimeout, r.o.TLS)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrLocal) {
				return false, fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
			rt.Failed(ctx, addr, err)
			errs = append(errs, err)
			continue
		}
		rt.Succeeded(ctx, addr)
		ok, err := c.auth(ctx, user, password)
		c.quit()
		c.close()
		if err != nil {
			return false, fmt.Errorf("%s: %w", addr, err)
		}
		return ok, nil
	}
	if len(errs) == 0 {
		return false, errAllDown
	}
	return false, fmt.Errorf("%w: %v", ErrUnavailable, errors.Join(errs...))
}

// auth sends AUTH PLAIN; the caller closes the connection.
func (c *client) auth(ctx context.Context, user, password string) (bool, error) {
	stop := c.watch(ctx)
	defer c.unwatch(stop)
	if !offers(c.ext["AUTH"], "PLAIN") {
		return false, ErrNoAuth
	}
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	_, err := c.cmd(235, "AUTH PLAIN "+resp)
	if se, ok := asReply(err); ok {
		// RFC 4954 §6: 535 5.7.8 is a wrong user name or password; 4xx
		// (454 4.7.0) is temporary; other 5xx (534 too weak, 538 needs
		// encryption, 504 unknown mechanism) are the server's setup.
		if se.Code == 535 {
			return false, nil
		}
		return false, fmt.Errorf("AUTH: %d %s", se.Code, se.Message)
	}
	if err != nil {
		return false, fmt.Errorf("AUTH: %w", err)
	}
	return true, nil
}

// offers reports whether the EHLO AUTH parameter lists mechanism.
func offers(mechs, mechanism string) bool {
	for _, m := range strings.Fields(mechs) {
		if strings.EqualFold(m, mechanism) {
			return true
		}
	}
	return false
}
