<#
.SYNOPSIS
    Starts a VM. Starting a running VM succeeds and says so.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9-]{0,127}$')][string]$VmId,
    [ValidatePattern('^$|^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')][string]$NativeId,
    [bool]$Cluster
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
Import-Module -Name (Join-Path -Path $PSScriptRoot -ChildPath 'HcpCommon.psm1') -Force

$vm = Get-HcpVmOrThrow -VmId $VmId -NativeId $NativeId -Cluster $Cluster
if ($vm.State -eq 'Running') {
    return [ordered]@{ WasRunning = $true }
}
Start-VM -VM $vm
[ordered]@{ WasRunning = $false }
