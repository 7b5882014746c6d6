//go:build !race

package payload

// raceEnabled: see race_on_test.go.
const raceEnabled = false
