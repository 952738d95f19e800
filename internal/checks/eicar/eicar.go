// Package eicar refuses mail carrying the EICAR anti-virus test file: a
// part whose decoded body is the EICAR string. An operator can prove the
// virus path end to end without a real virus. It is an inspector of the
// built-in MIME walk (internal/checks/builtin).
package eicar

import (
	"bytes"

	"mxguard/internal/mimewalk"
	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// Name labels the reply.
const Name = "eicar"

// The 68-byte EICAR string, in two halves so that this source file is not
// itself taken for the test file by a virus scanner.
const pattern = `X5O!P%@AP[4\PZX54(P^)7CC)7}$` + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

// maxLead is how much white space may come before the string: none in
// the EICAR file itself, a line or two when a mail client pastes it into
// a message.
const maxLead = 64

// Inspector finds EICAR at the start of any leaf part. The EICAR
// definition says the file starts with the string (eicar.org, "the first
// 68 characters is the known string"); anti-virus products match it
// there, not anywhere in a text that quotes it.
type Inspector struct{}

var _ mimewalk.Inspector = Inspector{}

// Part inspects every leaf part's first bytes.
func (Inspector) Part(*mimewalk.Part) (mimewalk.Body, error) { return &body{}, nil }

type body struct {
	head [maxLead + len(pattern)]byte
	n    int
}

func (b *body) Write(p []byte) error {
	b.n += copy(b.head[b.n:], p)
	if b.n < len(b.head) {
		return nil
	}
	if err := b.judge(); err != nil {
		return err
	}
	return mimewalk.ErrEnough
}

func (b *body) Close() error { return b.judge() }

func (b *body) judge() error {
	if bytes.HasPrefix(bytes.TrimLeft(b.head[:b.n], " \t\r\n"), []byte(pattern)) {
		return &pipeline.Finding{Class: pipeline.ClassVirus, Reply: reply.Content.WithText("Message content rejected: virus found (EICAR test file)").By(Name)}
	}
	return nil
}
