// Package configtest holds the configuration fixtures tests in several packages start from,
// typed out once. It imports nothing, so any package's tests may use it.
package configtest

// LandsHealth is two departments, lands and health, each with a public address pool and one
// segment (lands-web VLAN 120, 198.18.20.0/24; health-web, 198.18.30.0/24). Six documents.
const LandsHealth = `apiVersion: govcloud/v1
kind: Department
metadata: {name: lands}
spec: {displayName: Lands, quotas: {vcpus: 4, memoryGiB: 4, storageGiB: 10}}
---
apiVersion: govcloud/v1
kind: Department
metadata: {name: health}
spec: {displayName: Health}
---
apiVersion: govcloud/v1
kind: AddressPool
metadata: {name: lands-public}
spec: {cidrs: [198.19.0.0/24], departments: [lands]}
---
apiVersion: govcloud/v1
kind: AddressPool
metadata: {name: health-public}
spec: {cidrs: [198.19.1.0/24, "2001:db8:1::/120"], departments: [health]}
---
apiVersion: govcloud/v1
kind: Segment
metadata: {name: lands-web}
spec: {department: lands, vlan: 120, ipv4: 198.18.20.0/24, gateway: 198.18.20.1}
---
apiVersion: govcloud/v1
kind: Segment
metadata: {name: health-web}
spec: {department: health, ipv4: 198.18.30.0/24, gateway: 198.18.30.1}
`
