module github.com/filewatcher/filewatcher

go 1.24
