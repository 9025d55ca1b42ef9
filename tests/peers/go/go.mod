module tcp-hello-peers/go-hello

go 1.19
