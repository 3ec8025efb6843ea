//go:build !linux

package subscription

func newDatagramReader(sk *socket) datagramReader { return newSingleReader(sk) }
