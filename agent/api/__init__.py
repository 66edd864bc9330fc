"""What people and fleet tools see: status page, JSON, /metrics, cgminer API on 4028.

Surfaces read agent.state only; they never reach into drivers."""
