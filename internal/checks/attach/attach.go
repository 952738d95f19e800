// Package attach refuses mail carrying attachments of blocked types (the
// content.blocked_attachments list): by file name extension, by declared
// MIME type, and by the names of the files inside zip archives. It is an
// inspector of the built-in MIME walk (internal/checks/builtin). See
// README.md.
package attach

import (
	"bytes"
	"encoding/binary"
	"sort"
	"strings"

	"mxguard/internal/mimewalk"
	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// Name labels the reply.
const Name = "attach"

// Default is content.blocked_attachments' default (INTERFACE.md §2; config
// takes it from here): the file types Windows runs on a double click.
// Read-only.
var Default = []string{"exe", "scr", "pif", "com", "bat", "cmd", "vbs", "js", "jar", "msi"}

// mimeTypes are the media types senders declare for each extension (the
// types Windows, the IANA registry and the shared-mime-info database give
// them), so a part declared "application/x-msdownload" with an innocent
// name is refused when exe is blocked.
var mimeTypes = map[string][]string{
	"exe": {"application/x-msdownload", "application/x-dosexec", "application/x-msdos-program", "application/x-ms-dos-executable", "application/vnd.microsoft.portable-executable", "application/x-executable"},
	"scr": {"application/x-msdownload"},
	"com": {"application/x-msdos-program"},
	"pif": {"application/x-pif"},
	"bat": {"application/x-bat", "application/bat", "application/x-msdos-batch"},
	"cmd": {"application/x-cmd"},
	"vbs": {"application/x-vbscript", "text/vbscript", "application/vbscript"},
	"js":  {"application/javascript", "application/x-javascript", "text/javascript", "application/ecmascript", "text/ecmascript"},
	"jar": {"application/java-archive", "application/x-java-archive", "application/x-jar"},
	"msi": {"application/x-msi", "application/x-ms-installer", "application/x-ole-storage"},
}

// Inspector refuses blocked attachments. Build it with New; it is
// read-only afterwards and shared by all sessions.
type Inspector struct {
	ext   map[string]bool // blocked extensions, lowercase, without the dot
	types map[string]string
}

var _ mimewalk.Inspector = (*Inspector)(nil)

// New returns the inspector for a blocked_attachments list: extensions
// ("exe", ".exe") and MIME types ("application/x-msdownload"; an entry
// with a slash). A blocked extension blocks its usual MIME types too.
func New(blocked []string) *Inspector {
	in := &Inspector{ext: map[string]bool{}, types: map[string]string{}}
	for _, b := range blocked {
		b = strings.ToLower(strings.TrimSpace(b))
		if strings.Contains(b, "/") {
			in.types[b] = b
			continue
		}
		b = strings.TrimPrefix(b, ".")
		if b == "" {
			continue
		}
		in.ext[b] = true
		for _, t := range mimeTypes[b] {
			in.types[t] = "." + b
		}
	}
	return in
}

// Blocked lists what the inspector refuses, sorted (for logs and tests).
func (in *Inspector) Blocked() []string {
	var out []string
	for e := range in.ext {
		out = append(out, "."+e)
	}
	for t := range in.types {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Part judges a part's names and types; a part that is or may be a zip
// archive has its body scanned for the names inside.
func (in *Inspector) Part(p *mimewalk.Part) (mimewalk.Body, error) {
	for _, n := range p.Names {
		if ext, ok := in.blockedName(n); ok {
			return nil, refuse("." + ext)
		}
	}
	for _, t := range p.Types {
		if what, ok := in.types[t]; ok {
			return nil, refuse(what)
		}
	}
	if len(in.ext) == 0 {
		return nil, nil
	}
	z := &zipScan{in: in, sniff: true}
	for _, n := range p.Names {
		if strings.HasSuffix(normalize(n), ".zip") {
			z.sniff = false
		}
	}
	switch p.Type {
	case "application/zip", "application/x-zip-compressed", "application/x-zip", "multipart/x-zip":
		z.sniff = false
	}
	return z, nil
}

// blockedName reports whether a file name has a blocked extension.
func (in *Inspector) blockedName(name string) (string, bool) {
	n := normalize(name)
	i := strings.LastIndexByte(n, '.')
	if i < 0 {
		return "", false
	}
	ext := n[i+1:]
	return ext, in.ext[ext]
}

// normalize is a file name as Windows runs it: cut at a NUL, without
// the trailing dots and spaces Windows ignores ("invoice.exe ." runs
// invoice.exe), lowercased, without a directory.
func normalize(name string) string {
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	name = strings.TrimRight(name, ". \t\r\n")
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	return strings.ToLower(name)
}

func refuse(what string) *pipeline.Finding {
	return &pipeline.Finding{Class: pipeline.ClassVirus,
		Reply: reply.Content.WithText("Message content rejected: blocked attachment type (" + what + ")").By(Name)}
}

// zipScan finds the names of the files in a zip archive as its bytes go
// by. It looks for the archive's headers by their signatures — local file
// headers ("PK\x03\x04", APPNOTE.TXT §4.3.7) and central directory
// headers ("PK\x01\x02", §4.3.12) — rather than reading the archive from
// its end as unzip does, so it needs no seeking and no copy of the
// archive, and it still sees names when junk was put before the archive
// (Windows and 7-Zip open such files), when sizes in the local headers
// lie, with data descriptors and with zip64. Names are read, never
// contents: nothing is decompressed.
type zipScan struct {
	in    *Inspector
	sniff bool // only a scan if the body starts like a zip archive
	carry []byte
}

var (
	sigLocal   = []byte("PK\x03\x04")
	sigCentral = []byte("PK\x01\x02")
	sigEmpty   = []byte("PK\x05\x06")
)

// Header layouts: fixed length and the offset of the name length.
const (
	localFixed, localNameLen     = 30, 26
	centralFixed, centralNameLen = 46, 28
	// maxName bounds a name: longer ones are not file names (Windows
	// paths end at 32767 UTF-16 units; real archives stay far below 1024).
	maxName = 4096
)

func (z *zipScan) Write(b []byte) error {
	if z.sniff {
		// Not named or typed as zip: a scan only if the body starts with
		// a zip signature (a renamed archive).
		take := min(len(b), 4-len(z.carry))
		z.carry, b = append(z.carry, b[:take]...), b[take:]
		if len(z.carry) < 4 {
			return nil
		}
		if !bytes.Equal(z.carry, sigLocal) && !bytes.Equal(z.carry, sigEmpty) {
			return mimewalk.ErrEnough
		}
		z.sniff = false // scanning goes on over the carried head and b
	}
	data := b
	if len(z.carry) > 0 {
		data = append(z.carry, b...)
	}
	keep := max(0, len(data)-3) // a signature may straddle this piece and the next
	for i := 0; ; {
		j := bytes.Index(data[i:], []byte("PK"))
		if j < 0 {
			break
		}
		j += i
		fixed, nl := 0, 0
		switch {
		case bytes.HasPrefix(data[j:], sigLocal):
			fixed, nl = localFixed, localNameLen
		case bytes.HasPrefix(data[j:], sigCentral):
			fixed, nl = centralFixed, centralNameLen
		case len(data)-j < 4:
			keep = min(keep, j)
		}
		if fixed == 0 {
			i = j + 2
			continue
		}
		if len(data)-j < fixed {
			keep = min(keep, j)
			break
		}
		n := int(binary.LittleEndian.Uint16(data[j+nl:]))
		if n == 0 || n > maxName {
			i = j + 4
			continue
		}
		if len(data)-j < fixed+n {
			keep = min(keep, j)
			break
		}
		name := string(data[j+fixed : j+fixed+n])
		if ext, ok := z.in.blockedName(name); ok {
			return refuse("." + ext + " in a zip archive")
		}
		i = j + fixed + n
	}
	z.carry = append(z.carry[:0:0], data[keep:]...)
	return nil
}

func (z *zipScan) Close() error { return nil }
