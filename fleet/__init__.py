"""Hospital robot-fleet orchestrator."""
