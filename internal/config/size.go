package config

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// Size units. The SI units (KB, MB, ...) are powers of 1000 and the IEC
// units (KiB, MiB, ...) powers of 1024, as IEC 80000-13 defines them, so
// "10GiB" and "10GB" mean what a storage vendor's data sheet means.
const (
	KB Size = 1000
	MB      = 1000 * KB
	GB      = 1000 * MB
	TB      = 1000 * GB

	KiB Size = 1 << 10
	MiB      = 1024 * KiB
	GiB      = 1024 * MiB
	TiB      = 1024 * GiB
)

// sizeUnits is ordered from the largest unit down so String picks the
// shortest exact spelling.
var sizeUnits = []struct {
	name string
	n    Size
}{
	{"TiB", TiB}, {"TB", TB}, {"GiB", GiB}, {"GB", GB},
	{"MiB", MiB}, {"MB", MB}, {"KiB", KiB}, {"KB", KB},
}

// ParseSize reads a byte count: a plain integer (bytes) or a number with a
// unit B, KB, MB, GB, TB, KiB, MiB, GiB or TiB, in any letter case. A decimal
// fraction is allowed when the result is a whole number of bytes
// ("1.5MB" = 1500000, "0.5KiB" = 512).
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	end := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if end < 0 {
		end = len(s)
	}
	num, unit := s[:end], strings.ToLower(strings.TrimSpace(s[end:]))
	if num == "" || strings.Count(num, ".") > 1 || num[0] == '.' || num[len(num)-1] == '.' {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	// Anything longer cannot fit in an int64 anyway; refusing early keeps
	// the big-number arithmetic below cheap on hostile input.
	if len(num) > 40 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	mult := Size(1)
	if unit != "" && unit != "b" {
		found := false
		for _, u := range sizeUnits {
			if strings.ToLower(u.name) == unit {
				mult, found = u.n, true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("%q has an unknown unit %q", s, strings.TrimSpace(s[end:]))
		}
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(int64(mult)))
	if !r.IsInt() {
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(r.Num().Int64()), nil
}

// String gives the shortest exact spelling that ParseSize reads back, so
// error messages and the admin console show "10GiB" rather than 10737418240.
func (s Size) String() string {
	for _, u := range sizeUnits {
		if s != 0 && s%u.n == 0 {
			return strconv.FormatInt(int64(s/u.n), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}
