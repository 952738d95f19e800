//go:build race

package detect

// raceEnabled shrinks the flood tests, which the race detector slows ten times.
const raceEnabled = true
