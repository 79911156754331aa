module mayfly.dev/agent

go 1.19
