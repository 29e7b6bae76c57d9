<#
.SYNOPSIS
    Restarts a running VM: a guest reboot through the integration services, or a reset with Hard.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9-]{0,127}$')][string]$VmId,
    [ValidatePattern('^$|^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')][string]$NativeId,
    [bool]$Hard,
    [bool]$Cluster
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
Import-Module -Name (Join-Path -Path $PSScriptRoot -ChildPath 'HcpCommon.psm1') -Force

$vm = Get-HcpVmOrThrow -VmId $VmId -NativeId $NativeId -Cluster $Cluster
if ($Hard) {
    Restart-VM -VM $vm -Force
}
else {
    Restart-VM -VM $vm -Type Reboot -Force
}
[ordered]@{ Restarted = $true }
