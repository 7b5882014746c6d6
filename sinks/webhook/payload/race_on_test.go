//go:build race

package payload

// raceEnabled: the race detector slows Write several times; the memory
// tests, whose measurements it does not change, keep to small messages.
const raceEnabled = true
