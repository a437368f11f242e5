module github.com/power-dev-plugin/power-dev-plugin/test/e2e/cluster/tools

go 1.26.0
