package main

import (
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// smtpClient wraps go-smtp's client for tests.
type smtpClient struct{ *smtp.Client }

func dialSMTP(addr string) (*smtpClient, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	return &smtpClient{smtp.NewClient(conn)}, nil
}

func (c *smtpClient) SendMail(from string, to []string, msg string) error {
	return c.Client.SendMail(from, to, strings.NewReader(msg))
}
