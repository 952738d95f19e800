package attach

import (
	"archive/zip"
	"bytes"
	"errors"
	"slices"
	"testing"

	"mxguard/internal/mimewalk"
	"mxguard/internal/pipeline"
)

func zipOf(t testing.TB, method uint16, files ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	for _, f := range files {
		fw, err := w.CreateHeader(&zip.FileHeader{Name: f, Method: method})
		if err != nil {
			t.Fatal(err)
		}
		fw.Write(bytes.Repeat([]byte("data "), 40))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func isRefusal(err error) bool {
	var f *pipeline.Finding
	return errors.As(err, &f) && f.Class == pipeline.ClassVirus && f.Reply.Check == Name && f.Reply.Code == 554
}

// scan feeds data to a zip scan of a part with names in two pieces split
// at cut, and returns the first error.
func scan(in *Inspector, names []string, data []byte, cut int) error {
	b, err := in.Part(&mimewalk.Part{Type: "application/octet-stream", Types: []string{"application/octet-stream"}, Names: names})
	if err != nil || b == nil {
		return err
	}
	for _, piece := range [][]byte{data[:cut], data[cut:]} {
		if err := b.Write(piece); err != nil {
			if errors.Is(err, mimewalk.ErrEnough) {
				return nil
			}
			return err
		}
	}
	return b.Close()
}

// TestZipNames: a blocked name inside an archive is found wherever the
// archive's bytes are cut into pieces, stored or deflated, named .zip or
// sniffed by its signature; harmless archives pass at every cut.
func TestZipNames(t *testing.T) {
	in := New(Default)
	for _, tc := range []struct {
		name    string
		names   []string
		data    []byte
		refused bool
	}{
		{"deflated exe", []string{"a.zip"}, zipOf(t, zip.Deflate, "readme.txt", "bin/tool.EXE"), true},
		{"stored exe", []string{"a.zip"}, zipOf(t, zip.Store, "readme.txt", "run.vbs"), true},
		{"renamed archive", []string{"a.dat"}, zipOf(t, zip.Deflate, "x.scr"), true},
		{"no name at all", nil, zipOf(t, zip.Deflate, "x.jar"), true},
		{"harmless", []string{"a.zip"}, zipOf(t, zip.Deflate, "a.txt", "b.pdf", "c.docx"), false},
		{"not an archive", []string{"a.txt"}, []byte("PK is how this text starts, then names.exe"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for cut := 0; cut <= len(tc.data); cut++ {
				err := scan(in, tc.names, tc.data, cut)
				if tc.refused != isRefusal(err) {
					t.Fatalf("cut at %d of %d: %v, want refused %v", cut, len(tc.data), err, tc.refused)
				}
			}
		})
	}
}

func TestNames(t *testing.T) {
	in := New([]string{"EXE", ".js", "application/x-custom", " "})
	if got := in.Blocked(); !slices.Equal(got, []string{
		".exe", ".js", "application/ecmascript", "application/javascript", "application/vnd.microsoft.portable-executable",
		"application/x-custom", "application/x-dosexec", "application/x-executable", "application/x-javascript",
		"application/x-ms-dos-executable", "application/x-msdos-program", "application/x-msdownload",
		"text/ecmascript", "text/javascript"}) {
		t.Errorf("Blocked = %q", got)
	}
	for name, blocked := range map[string]bool{
		"setup.exe": true, "SETUP.EXE": true, "a.pdf.exe": true, "a.exe.": true, "a.exe . .": true,
		`C:\temp\run.js`: true, "dir/x.exe": true, "a.exe\x00.pdf": true,
		"a.exe.pdf": false, "exe": false, "a.jsx": false, "a.js.txt": false, "": false,
	} {
		if _, ok := in.blockedName(name); ok != blocked {
			t.Errorf("blockedName(%q) = %v, want %v", name, ok, blocked)
		}
	}
	for typ, blocked := range map[string]bool{"application/x-custom": true, "text/javascript": true, "application/x-msdownload": true, "application/pdf": false} {
		_, err := in.Part(&mimewalk.Part{Type: typ, Types: []string{"text/plain", typ}})
		if isRefusal(err) != blocked {
			t.Errorf("type %s: %v, want refused %v", typ, err, blocked)
		}
	}
	// Nothing blocked: nothing refused, no body read.
	if b, err := New(nil).Part(&mimewalk.Part{Names: []string{"a.exe"}}); b != nil || err != nil {
		t.Errorf("empty list: %v %v", b, err)
	}
}

// FuzzZipScan: any bytes, in any two pieces, end the scan without a panic
// and with a bounded carry.
func FuzzZipScan(f *testing.F) {
	f.Add(zipOf(f, zip.Deflate, "a.exe"), 10)
	f.Add([]byte("PK\x01\x02"+string(make([]byte, 60))), 3)
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		if cut < 0 || cut > len(data) {
			cut = len(data) / 2
		}
		z := &zipScan{in: New(Default)}
		for _, piece := range [][]byte{data[:cut], data[cut:]} {
			if err := z.Write(piece); err != nil {
				if !isRefusal(err) {
					t.Fatalf("error %v", err)
				}
				return
			}
			if len(z.carry) > centralFixed+maxName+len(piece) {
				t.Fatalf("carry %d bytes", len(z.carry))
			}
		}
	})
}
