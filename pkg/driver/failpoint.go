package driver

// failpoint, when not nil, is called at the named fault points of every
// State (State.hit). Only the fault-injection build of the plugin sets it
// (failpoint_faultinject.go, -tags faultinject; test/faults): the plugin as
// shipped has no fault points that do anything.
var failpoint func(point string)
