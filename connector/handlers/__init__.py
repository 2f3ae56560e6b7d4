"""Entry points: thin functions over API Gateway v2 (HTTP API), EventBridge and SQS events.
`serve` calls the same functions, so what runs locally is what runs in AWS."""
