package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/govcloud/govcloud/lab"
)

func init() { register(newLabCmd) }

func newLabCmd(g *globals) *cobra.Command {
	var opt lab.Options
	cmd := &cobra.Command{
		Use:   "lab up|verify|down",
		Short: "Run the whole system on one machine in network namespaces",
		Long: `lab builds a small data centre out of network namespaces on this machine and runs every
real component in it:

  gc-client --- gc-tor (FRR bgpd, AS 65000; bridge 'fabric' carries the L2 trunk)
                  |                     |
              gc-host1              gc-host2          (govcloud agent and compute agent each)
              gc-vm-*               gc-vm-*           (namespace guests = VM backends)

Each host's compute agent (--provider netns) makes the namespace guests of the VMs placed on
it, so VMs applied after up become real and deleted ones go.

The controller (embedded etcd) listens on 127.0.0.1:8480 on the machine itself.

With --hosts N (1 to 8, default 2) the lab has hosts gc-host1 .. gc-hostN, host K at
198.18.0.(10+K) with AS 6500K, each an eBGP neighbour of the ToR (ECMP over all of them).
Hosts the applied configuration does not declare are declared by the lab (as the example
declares gc-host1 and gc-host2); with --hosts 1, the example's gc-host2 is left out and its
VMs are placed on gc-host1. verify and down follow what up made.

With --vms the guests are real VMs instead: libvirtd on the machine (started when it is not
running; it keeps running after down), a compute agent in each host making the VMs the
controller placed there (qemu under TCG, the built-in tiny guest), each NIC reaching the host's
segment bridge through a veth pair. 'verify' then runs its probes inside the VMs through their
serial shells, and also checks the VM and volume panels of the dashboard.

  up      build it, apply deploy/examples/lab, wait until every VIP answers, print a tour
  verify  re-check the story; exits non-zero naming the failing check. Its last step is the
          isolation fuzz (issue 20): about 2,100 crafted frames from a guest of each department,
          a port on the ToR's L2 and gc-client, captured in every guest, host and the ToR; any
          crossing, or a drop counter that did not move, fails it (crossings listed in
          DIR/logs/isolation-fuzz-crossings.txt)
  down    remove every namespace, process and file the lab made (safe to repeat)

Needs root and the packages of 'sudo make deps'.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"up", "verify", "down"},
		RunE: func(cmd *cobra.Command, args []string) error {
			opt.Out = cmd.OutOrStdout()
			for _, name := range []string{"hosts", "vms"} {
				if args[0] != "up" && cmd.Flags().Changed(name) {
					fmt.Fprintf(cmd.ErrOrStderr(), "lab %s: --%s is for up only; %s follows what up made\n", args[0], name, args[0])
				}
			}
			if args[0] == "up" {
				if err := lab.CheckHosts(opt.Hosts); err != nil { // 0 too: lab.Options reads it as the default
					return err
				}
			} else {
				opt.Hosts = lab.DefaultHosts // ignored: what up made is read back
			}
			l, err := lab.New(opt)
			if err != nil {
				return err
			}
			switch args[0] {
			case "up":
				return l.Up(cmd.Context())
			case "verify":
				return l.Verify(cmd.Context())
			case "down":
				return l.Down(cmd.Context())
			}
			return fmt.Errorf("lab %q: want up, verify or down", args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.Dir, "dir", lab.DefaultDir, "where the lab keeps state, logs and pins")
	f.StringVar(&opt.Config, "config", "deploy/examples/lab", "YAML file or directory to apply")
	f.BoolVar(&opt.VMs, "vms", false, "up: real VMs through libvirt instead of namespace guests (verify and down follow what up made)")
	f.IntVar(&opt.Hosts, "hosts", lab.DefaultHosts, fmt.Sprintf("up: how many hosts, 1 to %d (verify and down follow what up made)", lab.MaxHosts))
	return cmd
}
