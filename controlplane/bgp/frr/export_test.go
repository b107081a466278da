package frr

// Route and SelectedHops are route and selectedHops, for the external tests.
type Route = route

var SelectedHops = selectedHops
