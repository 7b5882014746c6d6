module github.com/pophook/pophook

go 1.26
