"""The Faust app wiring: agents, timers and web views. Thin: decode, call the core, write, emit."""
