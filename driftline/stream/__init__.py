"""The streaming side: pure processing, and the Faust app, agent, web views and metrics."""
