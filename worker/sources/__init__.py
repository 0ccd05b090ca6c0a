"""Where prediction logs come from: file, simulator and Pub/Sub sources (the I/O shell)."""
