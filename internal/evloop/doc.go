// Package evloop is an event loop on epoll: one goroutine waits on an epoll
// descriptor (parked on the runtime's poller, or locked to its OS thread in
// epoll_wait: Mode) and runs every ready descriptor's
// handler to completion, then the timers that are due, without a goroutine
// switch between them. It is nginx's worker model (one thread per core, each
// ready event handled in place), for the paths where goroutine-per-connection
// pays a park, a futex wake-up and a netpoll round per request.
//
// Ownership: a Loop is owned by whoever called New; Close stops its
// goroutine and waits for it. Everything but Submit, Wake and Close runs on
// the loop's goroutine only (inside a handler, a timer or a submitted
// function): the loop's state has no locks. Descriptors registered with Add
// stay owned by their registrant, who must Remove them before closing them.
package evloop
