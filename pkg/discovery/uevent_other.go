//go:build !linux

package discovery

import (
	"context"
	"errors"
	"sync"
)

func listenUevents(context.Context, *sync.WaitGroup, func(string)) error {
	return errors.New("kernel uevents are a Linux feature")
}
