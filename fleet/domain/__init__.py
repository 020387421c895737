"""Pure domain model: cargo classes, priorities, orders and robots. Imports nothing from the edges."""
