module github.com/gonbd/gonbd

go 1.26.8

require (
	github.com/hashicorp/go-hclog v1.6.3
	github.com/pojntfx/go-nbd v0.3.2
	github.com/spf13/pflag v1.1.0
	github.com/stretchr/testify v1.11.1
	golang.org/x/crypto v0.45.0
	golang.org/x/sys v0.38.0
)

require (
	github.com/davecgh/go-spew v1.1.1 // indirect
	github.com/fatih/color v1.13.0 // indirect
	github.com/klauspost/compress v1.18.0 // indirect
	github.com/mattn/go-colorable v0.1.12 // indirect
	github.com/mattn/go-isatty v0.0.14 // indirect
	github.com/pmezard/go-difflib v1.0.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
