"""The live loop around a generator: Session (transports + store + OSC + run loop), RunLoop,
inputs loaded from files, the CPU demo. See docs/running.md."""
