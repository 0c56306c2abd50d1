"""vacelive bridge: live I/O around the engine (OSC, parameter store, transports, pacing, presets,
remote link, the run loop and the command line)."""
