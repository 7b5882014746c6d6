//go:build pprof

// This file is only in a binary built with -tags pprof (bench/run.sh
// -profile DIR builds one); the normal binary never has it.
//
// PHBENCH_CPUPROFILE=FILE writes a CPU profile of the whole process,
// PHBENCH_MEMPROFILE=FILE a heap profile (taken at exit after a GC: use
// -sample_index=alloc_space for where memory was allocated). main ends
// with os.Exit, which runs no deferred calls, so the profiles are
// written by beforeExit, which main calls before every exit.

package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
)

func init() {
	cpuFile, memFile := os.Getenv("PHBENCH_CPUPROFILE"), os.Getenv("PHBENCH_MEMPROFILE")
	if cpuFile == "" && memFile == "" {
		return
	}
	var cpu *os.File
	if cpuFile != "" {
		var err error
		if cpu, err = os.Create(cpuFile); err != nil {
			fmt.Fprintln(os.Stderr, "pophook: PHBENCH_CPUPROFILE:", err)
			os.Exit(2)
		}
		if err := pprof.StartCPUProfile(cpu); err != nil {
			fmt.Fprintln(os.Stderr, "pophook: PHBENCH_CPUPROFILE:", err)
			os.Exit(2)
		}
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if cpu != nil {
				pprof.StopCPUProfile()
				cpu.Close()
			}
			if memFile != "" {
				runtime.GC()
				f, err := os.Create(memFile)
				if err == nil {
					err = pprof.Lookup("heap").WriteTo(f, 0)
					if cerr := f.Close(); err == nil {
						err = cerr
					}
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "pophook: PHBENCH_MEMPROFILE:", err)
				}
			}
		})
	}

	beforeExit = stop
}
