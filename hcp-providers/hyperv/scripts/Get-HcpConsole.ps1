<#
.SYNOPSIS
    Describes a VMConnect-style console connection: the owner host, port 2179 and the VM id.
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
if ($vm.State -ne 'Running') {
    throw (New-HcpError -Category InvalidOperation -ErrorId 'VmNotRunning' -Message "The virtual machine '$($vm.Name)' is not running; a console needs a running virtual machine.")
}
$hostName = [System.Net.Dns]::GetHostEntry($vm.ComputerName).HostName
[ordered]@{ HostName = $hostName; Port = 2179; VmId = $vm.Id.ToString() }
