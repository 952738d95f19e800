package spool

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

// On-disk layout of a message file (all integers big-endian):
//
//	offset  size  field
//	0       8     magic "MXGSPOOL"
//	8       1     format version (1)
//	9       3     reserved, zero
//	12      4     length J of the envelope JSON
//	16      8     length M of the message
//	24      4     CRC-32C of the message bytes
//	28      4     CRC-32C of bytes 0..27 and the envelope JSON
//	32      J     envelope JSON
//	32+J    M     message, exactly as received (CRLF lines)
//
// The file size must be exactly 32+J+M: a shorter file was truncated (a
// crash on a filesystem that does not order data before the rename, or an
// operator's copy) and is never delivered. The message CRC is checked by the
// reader Open returns when it reaches the end, so a damaged body fails the
// read before the downstream gets the final dot of DATA.
const (
	magic         = "MXGSPOOL"
	formatVersion = 1
	headerSize    = 32
	// maxEnvelopeJSON bounds the JSON a reader allocates for; a real
	// envelope with max_recipients 100 long addresses stays far below it.
	maxEnvelopeJSON = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks a file whose content is provably wrong: it does not
// follow the layout or fails a checksum. Only such a file is quarantined;
// any other error reading it (EIO, EMFILE, EACCES, ...) is retried.
var errCorrupt = errors.New("corrupt spool file")

// encodeHeader returns the header and envelope JSON for a message of
// msgLen bytes whose CRC-32C is msgCRC.
func encodeHeader(env *Envelope, msgLen int64, msgCRC uint32) ([]byte, error) {
	js, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	b := make([]byte, headerSize, headerSize+len(js))
	copy(b, magic)
	b[8] = formatVersion
	binary.BigEndian.PutUint32(b[12:], uint32(len(js)))
	binary.BigEndian.PutUint64(b[16:], uint64(msgLen))
	b = append(b, js...)
	setMessageCRC(b, msgCRC)
	return b, nil
}

// setMessageCRC stores msgCRC in a header made by encodeHeader and
// renews the header's own checksum, which covers it. Put streams the
// message first and seals the header after.
func setMessageCRC(hdr []byte, msgCRC uint32) {
	binary.BigEndian.PutUint32(hdr[24:], msgCRC)
	crc := crc32.Update(crc32.Checksum(hdr[:28], castagnoli), castagnoli, hdr[headerSize:])
	binary.BigEndian.PutUint32(hdr[28:], crc)
}

// fileHeader is what decodeHeader learns from a message file.
type fileHeader struct {
	env    Envelope
	offset int64 // where the message starts
	msgLen int64
	msgCRC uint32
}

// decodeHeader reads and checks the header of a file of fileSize bytes.
func decodeHeader(r io.Reader, fileSize int64) (fileHeader, error) {
	var fh fileHeader
	var h [headerSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return fh, readError("short header", err)
	}
	if !bytes.Equal(h[:8], []byte(magic)) {
		return fh, fmt.Errorf("%w: bad magic", errCorrupt)
	}
	if h[8] != formatVersion {
		return fh, fmt.Errorf("%w: unknown version %d", errCorrupt, h[8])
	}
	jl := binary.BigEndian.Uint32(h[12:])
	ml := binary.BigEndian.Uint64(h[16:])
	if jl > maxEnvelopeJSON || ml > uint64(fileSize) {
		return fh, fmt.Errorf("%w: bad lengths", errCorrupt)
	}
	if want := int64(headerSize) + int64(jl) + int64(ml); fileSize != want {
		return fh, fmt.Errorf("%w: size %d, header says %d (truncated?)", errCorrupt, fileSize, want)
	}
	js := make([]byte, jl)
	if _, err := io.ReadFull(r, js); err != nil {
		return fh, readError("short envelope", err)
	}
	crc := crc32.Update(crc32.Checksum(h[:28], castagnoli), castagnoli, js)
	if crc != binary.BigEndian.Uint32(h[28:]) {
		return fh, fmt.Errorf("%w: header checksum mismatch", errCorrupt)
	}
	if err := json.Unmarshal(js, &fh.env); err != nil {
		return fh, fmt.Errorf("%w: envelope: %v", errCorrupt, err)
	}
	fh.offset = headerSize + int64(jl)
	fh.msgLen = int64(ml)
	fh.msgCRC = binary.BigEndian.Uint32(h[24:])
	fh.env.Size = fh.msgLen
	return fh, nil
}

// readError tells a file that ends too early (damaged: quarantined) from
// a read that failed (EIO and the like: says nothing about the content,
// so the file is kept and read again later).
func readError(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s", errCorrupt, what)
	}
	return fmt.Errorf("read %s: %w", strings.TrimPrefix(what, "short "), err)
}

// checkedReader returns the message bytes and, at the end, io.EOF only if
// their CRC matches; otherwise an error, so a consumer that reads to the
// end before sending the final dot never hands on a damaged message.
type checkedReader struct {
	r    io.Reader
	want uint32
	crc  uint32
	c    io.Closer
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc = crc32.Update(c.crc, castagnoli, p[:n])
	if err == io.EOF && c.crc != c.want {
		return n, fmt.Errorf("spool: %w: message checksum mismatch", errCorrupt)
	}
	return n, err
}

func (c *checkedReader) Close() error { return c.c.Close() }
