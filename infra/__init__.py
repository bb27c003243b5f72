"""Infrastructure: local Kafka-compatible broker and Redis without Docker, compose files."""
