"""Control loops: thermal, tuner and guardian.

Each is a pure decide() returning actions with reasons, plus a thin periodic loop."""
