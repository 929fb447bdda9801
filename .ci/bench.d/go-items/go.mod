module cloud-run-rust/go-items

go 1.24
