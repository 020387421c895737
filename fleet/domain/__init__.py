"""Pure domain model: cargo classes, priorities, orders and robots; imports no edge code."""
